"""One module per DVC stage: read the declared inputs, call the library, write the declared outputs."""
