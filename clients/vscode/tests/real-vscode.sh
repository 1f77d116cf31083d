#!/usr/bin/env bash
# The extension in a real VS Code: code-server 4.100.3 (VS Code 1.100.3, engines.node 20) in
# Debian's headless Chromium, driven by playwright-core (tests/real-vscode.mjs). The .vsix is
# built from this folder and installed; the real deepseek-lsp server and its default model
# answer. Screenshots go to $SCREENSHOTS (default: a temp folder, printed).
#   DEEPSEEK_LSP=/path/to/deepseek-lsp clients/vscode/tests/real-vscode.sh
# Needs: Chromium (`apt-get install chromium`) and ripgrep (`apt-get install ripgrep`: code-server's
# install would download it from GitHub otherwise); to install code-server, libkrb5-dev and
# build-essential (its native modules are compiled by node-gyp). code-server is installed from npm on first
# use into ${XDG_CACHE_HOME:-~/.cache}/deepseek-lsp-tests/code-server-4.100.3 (about 3 minutes).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ext="$(dirname "$here")"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
SERVER="${DEEPSEEK_LSP:-$(command -v deepseek-lsp || true)}"
[ -x "$CHROMIUM" ] || { echo "Chromium not found at $CHROMIUM: apt-get install chromium (or set CHROMIUM)" >&2; exit 3; }
command -v rg >/dev/null || { echo "ripgrep not found: apt-get install ripgrep" >&2; exit 3; }
[ -n "$SERVER" ] && [ -x "$SERVER" ] || { echo "deepseek-lsp not found: activate the project's venv or set DEEPSEEK_LSP" >&2; exit 3; }
export CHROMIUM

# code-server, installed once. Its postinstall needs --unsafe-perm as root; an npm that skips
# install scripts leaves it undone, and it is then run here with npm's user agent, which it needs. Its ripgrep
# download is served from the local rg through @vscode/ripgrep's cache folder.
cs_dir="${XDG_CACHE_HOME:-$HOME/.cache}/deepseek-lsp-tests/code-server-4.100.3"
if [ ! -f "$cs_dir/.installed" ]; then
  # Its native modules build with node-gyp; kerberos needs the GSSAPI headers.
  [ -f /usr/include/gssapi/gssapi.h ] || { echo "gssapi/gssapi.h not found (code-server's kerberos module): apt-get install libkrb5-dev" >&2; exit 3; }
  command -v make >/dev/null && { command -v c++ >/dev/null || command -v g++ >/dev/null; } \
    || { echo "a C++ compiler and make are needed to build code-server's native modules: apt-get install build-essential" >&2; exit 3; }
  echo "installing code-server 4.100.3 into $cs_dir" >&2
  rm -rf "$cs_dir" && mkdir -p "$cs_dir"
  tmp="${TMPDIR:-/tmp}"
  mkdir -p "$tmp/vscode-ripgrep-cache-1.15.11"
  tar czf "$tmp/vscode-ripgrep-cache-1.15.11/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz" -C "$(dirname "$(command -v rg)")" rg
  (cd "$cs_dir" && echo '{"private": true}' > package.json \
    && npm_config_yes=true npm_config_unsafe_perm=true npm install --no-audit --no-fund code-server@4.100.3 >&2 \
    && cd node_modules/code-server \
    && if [ ! -L lib/vscode/node_modules.asar ]; then
         npm_config_user_agent="npm/$(npm --version) node/$(node --version) linux x64" sh ./postinstall.sh >&2
       fi)
  touch "$cs_dir/.installed"
fi
CODE_SERVER="$cs_dir/node_modules/.bin/code-server"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
SCREENSHOTS="${SCREENSHOTS:-$work/screenshots}"
mkdir -p "$SCREENSHOTS" "$work/ws"

# The .vsix, built the way README.md says.
(cd "$ext" && npm run compile >&2 && npx vsce package --out "$work/deepseek-lsp.vsix" >&2)

# The workspace: the document with a hole that the Neovim test uses too (clients/hole.py), made
# with the server's own Python.
python="$(dirname "$SERVER")/python"
[ -x "$python" ] || python=python3
read -r line col < <("$python" "$(dirname "$ext")/hole.py" "$work/ws/unix_hole.py")

cd "$ext"
node tests/real-vscode.mjs --code-server "$CODE_SERVER" --vsix "$work/deepseek-lsp.vsix" --server "$SERVER" \
  --workspace "$work/ws" --file unix_hole.py --line "$line" --col "$((col + 1))" --expect 'self._user_media_dir(' \
  --screenshot "$SCREENSHOTS/ghost-text.png"
# Issue #16: a quiet editor, alternatives, partial accepts, live settings, chat code to apply.
read -r bline bcol < <("$python" "$(dirname "$ext")/hole.py" "$work/ws/body_hole.py" --body user_videos_dir)
read -r hline hcol < <("$python" "$(dirname "$ext")/hole.py" "$work/ws/unix_hole2.py")
node tests/editing-vscode.mjs --code-server "$CODE_SERVER" --vsix "$work/deepseek-lsp.vsix" --server "$SERVER" \
  --workspace "$work/ws" --file body_hole.py --line "$bline" --col "$((bcol + 1))" \
  --hole-file unix_hole2.py --hole-line "$hline" --hole-col "$((hcol + 1))" --shots "$SCREENSHOTS"
# An untrusted workspace whose settings try to send code elsewhere and run tests unsandboxed.
node tests/untrusted-vscode.mjs --code-server "$CODE_SERVER" --vsix "$work/deepseek-lsp.vsix" --server "$SERVER" \
  --screenshot "$SCREENSHOTS/untrusted.png"
echo "screenshots: $SCREENSHOTS" >&2
