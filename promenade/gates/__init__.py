"""Gates: boot nodes (sandbox or real), run the generated scripts on them, check with testinfra."""
