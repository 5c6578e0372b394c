// Everything a host application or a plugin needs.
#pragma once

#include "plugformer/auto.h"
#include "plugformer/config.h"
#include "plugformer/error.h"
#include "plugformer/generation.h"
#include "plugformer/layers.h"
#include "plugformer/log.h"
#include "plugformer/modeling.h"
#include "plugformer/plugin_loader.h"
#include "plugformer/registry.h"
#include "plugformer/runtime.h"
#include "plugformer/safetensors.h"
#include "plugformer/tokenizer.h"
