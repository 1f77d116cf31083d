#!/usr/bin/env bash
# Headless Neovim 0.11 against the real deepseek-lsp server and its real default model:
# a suggestion appears as virtual text in a real buffer (a file this project did not
# write, with a hole cut into it) and is accepted; keys, alternatives, word and line accepts,
# chat code blocks (insert, copy, apply after a diff), live settings (see check.lua).
#   NVIM=/path/to/nvim DEEPSEEK_LSP=/path/to/deepseek-lsp [SCREENS=dir] clients/neovim/tests/run.sh
# SCREENS: a folder for text dumps of the screen at three moments (docs/images/neovim-*.txt).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
plugin="$(dirname "$here")"
NVIM="${NVIM:-nvim}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export XDG_DATA_HOME="$work/data" XDG_STATE_HOME="$work/state" XDG_CONFIG_HOME="$work/config"
python="${PYTHON:-python3}"
read -r line col < <("$python" "$(dirname "$plugin")/hole.py" "$work/unix_hole.py")
# The plugin's folder goes on 'runtimepath' through the environment: `set rtp^=` splits a path with spaces.
DEEPSEEK_PLUGIN="$plugin" "$NVIM" --headless --clean --cmd 'lua vim.opt.rtp:prepend(vim.env.DEEPSEEK_PLUGIN)' \
  -l "$here/check.lua" "$work/unix_hole.py" "$line" "$col"
