"""`python -m medq.cli ...` runs the `medq` command line."""
from medq.cli import main

main()
