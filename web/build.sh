#!/usr/bin/env bash
# Builds the playground into web/dist/: the chainrule-web crate for wasm32, its
# JavaScript glue (wasm-bindgen-cli at the crate's pinned version), and the static
# files. Serve web/dist/ with any static server, e.g.
#   python3 -m http.server -d web/dist 8000
set -euo pipefail
cd "$(dirname "$0")/.."

# The version chainrule-web pins (wasm-bindgen = "=X.Y.Z"); the CLI must match it.
version=$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)"$/\1/p' crates/chainrule-web/Cargo.toml)
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$version" ]; then
  cargo install wasm-bindgen-cli --version "$version" --locked
fi

target="${CARGO_TARGET_DIR:-target}"
cargo build --release --target wasm32-unknown-unknown -p chainrule-web
rm -rf web/dist
mkdir -p web/dist/pkg
wasm-bindgen --target web --no-typescript --out-dir web/dist/pkg \
  "$target/wasm32-unknown-unknown/release/chainrule_web.wasm"
cp web/index.html web/style.css web/app.js web/dist/
echo "built web/dist/ ($(du -sh web/dist | cut -f1)); serve it with: python3 -m http.server -d web/dist 8000"
