"""The `coevo` command line (`engine.cli.main`) and its benchmark (`engine.cli.bench`)."""
