// Compiled only to produce the precompiled torch header.
