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

# Build the book into book/book.
book:
    mdbook build book

# Serve the book and open it in a browser.
serve:
    mdbook serve book --open

# Everything CI runs.
ci:
    bash .ci/run
