# Sourced by the other scripts: installs what a fresh machine with only the
# Rust toolchain lacks. Safe to run again; it only adds what is missing.

need_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "error: '$*' needs root; run it yourself and try again" >&2; return 1; fi
}

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 target (strategies compile to it)" >&2
    rustup target add wasm32-wasip2
fi

if [ "${TRADEHOST_NEEDS_REDIS:-0}" = 1 ] && ! command -v redis-server >/dev/null; then
    echo "setup: installing redis-server from Debian's packages (the Redis tests start their own)" >&2
    need_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive need_root apt-get install -y -qq redis-server >/dev/null
fi

if [ "${TRADEHOST_NEEDS_BROWSER:-0}" = 1 ] && ! { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }; then
    echo "setup: installing chromium and chromium-driver from Debian's packages (the console's browser tests)" >&2
    need_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive need_root apt-get install -y -qq chromium chromium-driver >/dev/null
fi

if [ "${TRADEHOST_NEEDS_FAKETIME:-0}" = 1 ] && ! ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; then
    echo "setup: installing faketime from Debian's packages (the square-off-by-the-clock test sets the wall clock)" >&2
    need_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive need_root apt-get install -y -qq faketime >/dev/null
fi

if [ "${TRADEHOST_NEEDS_LINTS:-0}" = 1 ]; then
    for component in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
            echo "setup: adding the $component component (the test command's format and lint gates)" >&2
            rustup component add "$component"
        fi
    done
fi

if [ "${TRADEHOST_NEEDS_MDBOOK:-0}" = 1 ] && ! command -v mdbook >/dev/null; then
    echo "setup: installing mdbook from crates.io (the test command builds the book in docs/)" >&2
    cargo install mdbook --locked --no-default-features --version '^0.4'
fi
