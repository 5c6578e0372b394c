#!/usr/bin/env bash
# The install test: installs a built plugformer into a temp prefix, builds
# examples/out_of_tree_plugin against it with find_package(plugformer) as an outside plugin
# author would, and checks with the *installed* `plugformer list` that
#   - the out-of-tree "toy" plugin is loaded from PLUGFORMER_PLUGIN_PATH, and
#   - the installed llama plugin is found in <prefix>/lib/plugformer/plugins with no
#     PLUGFORMER_PLUGIN_PATH at all.
# Needs a complete build of <build dir> (cmake --install copies what the build made).
# Every temp directory is removed on exit, pass or fail (set PLUGFORMER_KEEP_TEST_DIRS=1 to keep).
#
# usage: install_test.sh --cmake CMAKE --build-dir DIR --source-dir DIR
#                        [--cxx-compiler CXX] [--torch-dir DIR]
set -u

cmake_cmd=cmake build_dir="" source_dir="" cxx="" torch_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cmake) cmake_cmd=$2; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --source-dir) source_dir=$2; shift 2 ;;
    --cxx-compiler) cxx=$2; shift 2 ;;
    --torch-dir) torch_dir=$2; shift 2 ;;
    *) echo "install_test.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
if [ -z "$build_dir" ] || [ -z "$source_dir" ]; then
  echo "install_test.sh: --build-dir and --source-dir are required" >&2
  exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/plugformer-install-test.XXXXXX") || exit 1
tmp=$(cd "$tmp" && pwd -P)  # the loader reports canonical paths
cleanup() {
  if [ "${PLUGFORMER_KEEP_TEST_DIRS:-0}" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok:   $*"; }
die() { echo "FAIL: $*"; exit 1; }

prefix=$tmp/prefix
toy_build=$tmp/toy-build
plugin_dir=$prefix/lib/plugformer/plugins

echo "== cmake --install $build_dir --prefix $prefix"
"$cmake_cmd" --install "$build_dir" --prefix "$prefix" > "$tmp/install.log" 2>&1 \
  || { cat "$tmp/install.log"; die "cmake --install failed (is the build complete?)"; }
for f in "$prefix/bin/plugformer" "$prefix/include/plugformer/plugin.h" \
         "$prefix/lib/cmake/plugformer/plugformerConfig.cmake" \
         "$prefix/lib/cmake/plugformer/PlugformerPlugin.cmake" "$plugin_dir/libplugformer_llama.so"; do
  [ -e "$f" ] && pass "installed ${f#"$prefix"/}" || fail "not installed: ${f#"$prefix"/}"
done
ls "$prefix"/lib/libplugformer.so* > /dev/null 2>&1 && pass "installed lib/libplugformer.so" \
  || fail "not installed: lib/libplugformer.so"
[ "$failures" -eq 0 ] || die "the install tree is incomplete"

echo "== configure and build examples/out_of_tree_plugin against $prefix"
configure_args=(-S "$source_dir/examples/out_of_tree_plugin" -B "$toy_build" -G Ninja
                "-DCMAKE_PREFIX_PATH=$prefix")
[ -n "$cxx" ] && configure_args+=("-DCMAKE_CXX_COMPILER=$cxx")
[ -n "$torch_dir" ] && configure_args+=("-DTorch_DIR=$torch_dir")
"$cmake_cmd" "${configure_args[@]}" > "$tmp/toy-configure.log" 2>&1 \
  || { cat "$tmp/toy-configure.log"; die "configuring the out-of-tree plugin failed"; }
pass "find_package(plugformer) from the install prefix"
"$cmake_cmd" --build "$toy_build" > "$tmp/toy-build.log" 2>&1 \
  || { cat "$tmp/toy-build.log"; die "building the out-of-tree plugin failed"; }
toy_so=$toy_build/libplugformer_toy.so
[ -f "$toy_so" ] || die "the out-of-tree build made no libplugformer_toy.so"
pass "built $(basename "$toy_so")"

# The installed CLI, with only the environment a user would have.
run_list() {
  env -u LD_LIBRARY_PATH "$@" PLUGFORMER_LOG_LEVEL=debug "$prefix/bin/plugformer" list
}

echo "== PLUGFORMER_PLUGIN_PATH=$toy_build $prefix/bin/plugformer list"
run_list PLUGFORMER_PLUGIN_PATH="$toy_build" > "$tmp/list-toy.out" 2>&1
status=$?
cat "$tmp/list-toy.out"
[ $status -eq 0 ] || fail "plugformer list exited with status $status"
grep -Eq '^libplugformer_toy\.so +toy +ToyForCausalLM, ToyModel' "$tmp/list-toy.out" \
  && pass "the toy family and its architectures are listed" || fail "no 'toy' family with ToyForCausalLM, ToyModel in the list"
grep -Eq 'tasks: AutoModel, AutoModelForCausalLM' "$tmp/list-toy.out" \
  && pass "the toy tasks are listed" || fail "the toy tasks AutoModel, AutoModelForCausalLM are not listed"
grep -Fq "loaded plugin $toy_so " "$tmp/list-toy.out" \
  && pass "toy loaded from $toy_so" || fail "toy was not loaded from $toy_so"
# (Plugins of the build tree that share a name with an installed one are listed as refused:
# "already loaded". Nothing from the install prefix or the toy build may be refused.)
grep -F "refused: $tmp/" "$tmp/list-toy.out" && fail "a plugin of the install prefix or the toy build was refused"

echo "== $prefix/bin/plugformer list (no PLUGFORMER_PLUGIN_PATH)"
run_list -u PLUGFORMER_PLUGIN_PATH > "$tmp/list-default.out" 2>&1
status=$?
cat "$tmp/list-default.out"
[ $status -eq 0 ] || fail "plugformer list exited with status $status"
grep -Eq '^libplugformer_llama\.so +llama +.*LlamaForCausalLM' "$tmp/list-default.out" \
  && pass "LlamaForCausalLM is listed" || fail "LlamaForCausalLM is not listed"
# The build tree's plugin directory is on the search path too, after the install dir: the
# llama plugin must be the installed one.
grep -Fq "loaded plugin $plugin_dir/libplugformer_llama.so " "$tmp/list-default.out" \
  && pass "llama loaded from the install dir $plugin_dir" || fail "llama was not loaded from $plugin_dir"
on_path=0
for dir in $(sed -n 's/^search path://p' "$tmp/list-default.out"); do
  [ "$(realpath -m "$dir")" = "$plugin_dir" ] && on_path=1
done
[ $on_path = 1 ] && pass "the install plugin dir is on the search path" || fail "$plugin_dir is not on the search path"
grep -q 'ToyModel' "$tmp/list-default.out" && fail "toy listed without PLUGFORMER_PLUGIN_PATH"

if [ "$failures" -ne 0 ]; then
  echo "install test: $failures check(s) failed"
  exit 1
fi
echo "install test: all checks passed"
