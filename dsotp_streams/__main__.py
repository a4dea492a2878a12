"""`python -m dsotp_streams` runs the CLI."""

from dsotp_streams.cli import main

main()
