#!/usr/bin/env bash
# Vendor NiiVue's single-file browser build into monai_xai/visualize/vendor/niivue/ (the interactive HTML reports inline
# it, so a report needs no network and no sibling file). Re-run with another version to update, then re-run the
# report tests. Needs npm and the npm registry.
#
#   tools/vendor_niivue.sh [VERSION]
#
# The npm package ships dist/niivue.umd.js: a UMD build with every dependency bundled (no imports, no chunks, no
# workers) that defines the global `niivue` in a plain <script>; it is copied unchanged. The package has no licence
# file, so LICENSE (BSD-2-Clause, from the NiiVue repository) is kept in the vendor folder; the licences of the
# packages bundled into the build are gathered from an `npm install` of the same version into THIRD_PARTY_LICENSES.
set -euo pipefail
VERSION="${1:-0.69.0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/monai_xai/visualize/vendor/niivue"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cd "$WORK"
npm init -y >/dev/null
npm install --ignore-scripts --no-audit --no-fund "@niivue/niivue@$VERSION" >/dev/null
PACKAGE="$WORK/node_modules/@niivue/niivue"
test "$(node -p "require('$PACKAGE/package.json').version")" = "$VERSION"

mkdir -p "$DEST"
cp "$PACKAGE/dist/niivue.umd.js" "$DEST/niivue.umd.js"
{
    echo "Licences of the packages bundled into niivue.umd.js (@niivue/niivue $VERSION's dependencies, from npm)."
    for license in $(find node_modules -mindepth 2 -maxdepth 3 -iname 'licen[cs]e*' | sort); do
        name="$(dirname "${license#node_modules/}")"
        case "$name" in @niivue/niivue | @rollup/*) continue ;; esac  # rollup: a build tool, not bundled
        printf '\n==== %s %s ====\n\n' "$name" "$(node -p "require('./node_modules/$name/package.json').version")"
        cat "$license"
    done
} > "$DEST/THIRD_PARTY_LICENSES"
cat > "$DEST/README.md" <<README
# NiiVue $VERSION (vendored)

\`niivue.umd.js\` is \`dist/niivue.umd.js\` of the npm package \`@niivue/niivue@$VERSION\`
(https://www.npmjs.com/package/@niivue/niivue, source https://github.com/niivue/niivue), copied unchanged by
\`tools/vendor_niivue.sh $VERSION\`: NiiVue's own UMD build, every dependency bundled, defining the global \`niivue\`.
sha256: $(sha256sum "$DEST/niivue.umd.js" | cut -d' ' -f1)

Licence: BSD-2-Clause (\`LICENSE\`); the bundled dependencies' licences (MIT, ISC) are in \`THIRD_PARTY_LICENSES\`.
\`monai_xai.visualize.report\` inlines this file into each case report.
README
echo "vendored @niivue/niivue $VERSION into $DEST"
