#!/usr/bin/env bash
# Screenshots of the demo's pages, as a browser shows them: docs/images/demo_index.png and demo_report.png.
# Run after `make demo` (outputs in demo_output/); needs chromium (apt-get install -y chromium).
#   bash docs/make_screenshots.sh [demo_output]
set -euo pipefail
cd "$(dirname "$0")/.."
demo="$(realpath "${1:-demo_output}")"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome)"
for page in index:index.html report:report/report.html; do
    name="${page%%:*}"
    file="$demo/${page#*:}"
    [ -f "$file" ] || { echo "missing $file (run make demo first)" >&2; exit 2; }
    tmp="docs/images/.demo_${name}.tmp.png"
    "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2000 \
        --screenshot="$PWD/$tmp" "file://$file" 2>/dev/null
    mv "$tmp" "docs/images/demo_${name}.png"   # atomic: never a half-written PNG
    echo "docs/images/demo_${name}.png <- $file"
done
