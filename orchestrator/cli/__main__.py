"""`python -m orchestrator.cli`: the `ebtscale` command (what Ray Jobs and the tests run)."""

from orchestrator.cli import main

main()
