"""One module per GitHub event, each with its own gidgethub `router`."""
