#!/bin/sh
# Builds the ~1 MB English text used by the tokenizer benchmark from files every Debian system
# with nodejs has (licence texts and the Node.js API docs): the same bytes on every run.
# Usage: make_corpus.sh OUT_FILE
set -eu
out="$1"
tmp="$out.tmp"
: > "$tmp"
for f in /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/GFDL-1.3 /usr/share/common-licenses/LGPL-2.1 \
         /usr/share/common-licenses/Apache-2.0 /usr/share/common-licenses/Artistic /usr/share/common-licenses/MPL-2.0 \
         $(ls /usr/share/doc/nodejs/api/*.md | sort); do
  cat "$f" >> "$tmp"
done
# Exactly 1,000,000 bytes, cut at a line end.
head -c 1000000 "$tmp" | sed '$d' > "$out"
rm -f "$tmp"
wc -c "$out"
