#!/usr/bin/env bash
# Builds the playground into web/dist/: the chainrule-web crate for wasm32, its
# JavaScript glue (wasm-bindgen-cli at the crate's pinned version, installed --locked
# when missing), KaTeX (from npm, at the version below) for the typeset derivations,
# the notebooks' worked examples (examples/notebooks) and the static files. Then
# serve it with
#   chainrule playground            (or: cargo run --release -p chainrule-cli -- playground)
#
# Needs: rustup and cargo; curl and sha256sum when wasm-bindgen-cli is missing; npm,
# or curl, to fetch KaTeX's package from the npm registry once (it is kept in
# target/katex-$KATEX_VERSION).
set -euo pipefail
cd "$(dirname "$0")/.."

KATEX_VERSION=0.16.22

# The version chainrule-web pins (wasm-bindgen = "=X.Y.Z"); the CLI must match it.
version=$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)"$/\1/p' crates/chainrule-web/Cargo.toml)
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
target="${CARGO_TARGET_DIR:-target}"
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$version" ]; then
  # Installed --locked, from the lock file the release ships, so every build gets the
  # same dependencies. That lock file (0.2.130's) names webpki-roots 1.0.11, which
  # crates.io does not have: not yanked (cargo would still take a yanked crate from a
  # lock file) but absent, from the index and as a download (measured on 30 November
  # 2026: `cargo install wasm-bindgen-cli --version 0.2.130 --locked` fails with
  # "failed to select a version for the requirement `webpki-roots = \"^1.0.10\"`
  # (locked to 1.0.11)", and static.crates.io answers 403 for that .crate). So the
  # release's source is unpacked (checked against the index's checksum), that one
  # entry is moved to the release before it, 1.0.10 (`cargo update --precise`, which
  # changes nothing else), and that is installed --locked.
  src="$target/wasm-bindgen-cli-$version"
  rm -rf "$src"
  mkdir -p "$target"
  curl -fsSL -o "$src.crate" "https://static.crates.io/crates/wasm-bindgen-cli/wasm-bindgen-cli-$version.crate"
  want=$(curl -fsSL https://index.crates.io/wa/sm/wasm-bindgen-cli | grep "\"vers\": *\"$version\"" |
    sed 's/.*"cksum": *"\([0-9a-f]*\)".*/\1/')
  echo "$want  $src.crate" | sha256sum --check --quiet
  tar -xzf "$src.crate" -C "$target"
  if grep -A1 '^name = "webpki-roots"$' "$src/Cargo.lock" | grep -q '^version = "1.0.11"$'; then
    (cd "$src" && cargo update --package webpki-roots@1.0.11 --precise 1.0.10)
  fi
  cargo install --locked --path "$src"
fi

cargo build --release --target wasm32-unknown-unknown -p chainrule-web

katex="$target/katex-$KATEX_VERSION"
if [ ! -f "$katex/package/dist/katex.min.js" ]; then
  mkdir -p "$katex"
  if command -v npm >/dev/null; then
    (cd "$katex" && npm pack --silent "katex@$KATEX_VERSION" >/dev/null)
  else
    curl -fsSL -o "$katex/katex-$KATEX_VERSION.tgz" \
      "https://registry.npmjs.org/katex/-/katex-$KATEX_VERSION.tgz"
  fi
  tar -xzf "$katex/katex-$KATEX_VERSION.tgz" -C "$katex"
fi

rm -rf web/dist
mkdir -p web/dist/pkg web/dist/katex/fonts web/dist/notebooks
wasm-bindgen --target web --no-typescript --out-dir web/dist/pkg \
  "$target/wasm32-unknown-unknown/release/chainrule_web.wasm"
cp web/index.html web/style.css web/app.js web/dist/
cp "$katex/package/dist/katex.min.js" "$katex/package/dist/katex.min.css" web/dist/katex/
cp "$katex"/package/dist/fonts/*.woff2 web/dist/katex/fonts/
cp "$katex/package/LICENSE" web/dist/katex/LICENSE
for nb in examples/notebooks/*/; do
  name=$(basename "$nb")
  mkdir -p "web/dist/notebooks/$name"
  cp "$nb"/*.json "web/dist/notebooks/$name/"
  for f in params.safetensors x.npy y.npy network.formula; do
    if [ -f "$nb/$f" ]; then cp "$nb/$f" "web/dist/notebooks/$name/"; fi
  done
done
echo "built web/dist/ ($(du -sh web/dist | cut -f1)); serve it with: chainrule playground"
