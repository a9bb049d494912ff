"""One construct per component; stacks only assemble and wire them."""
