# proclab: run `just` to see the recipes.

# List the recipes.
default:
    @just --list

# Run a demo: just demo fork_exec_wait --exit-code 7
demo NAME *ARGS:
    @cargo run --quiet --bin {{NAME}} -- {{ARGS}}

# Run every test (what the README says: cargo test).
test:
    cargo test

# Format check and clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets --locked -- -D warnings

# Build the book into book/book, then check every page in headless Chromium (no raw
# include text, images load, no script error, no transcript cut off).
book:
    mdbook build book
    python3 .ci/book_in_browser.py book/book

# Rerun every transcript's command (book/src/*/transcripts/*.txt) and rewrite the file
# with what it prints now; `cargo test --test transcripts` checks they still match. (It
# runs two tests named transcripts: the root's, and mqtt_workers' for `cargo run -p` ones.)
transcripts:
    cargo build --bins
    PROCLAB_TRANSCRIPTS=overwrite cargo test --test transcripts -- every_transcript

# Serve the book and open it in a browser.
serve:
    mdbook serve book --open

# The measuring demos beside the reference tools, and prefork's requests/s, on this machine.
# Writes the results and figures under target/bench/ (the tree stays clean); `just bench
# --update-book` writes them into book/src/ instead, where the chapters include them.
# `just bench sched` or `just bench prefork` runs one part. perf: apt-get install linux-perf.
bench *ARGS:
    cargo bench --bench reference -- {{ARGS}}

# Everything CI runs.
ci:
    bash .ci/run

# Grade a lab: just grade reaper --submission my_reaper.rs (see `just grade hint reaper`).
grade LAB *ARGS:
    @cargo run --quiet -p labs --bin grade -- {{LAB}} {{ARGS}}
