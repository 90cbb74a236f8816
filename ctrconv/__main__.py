"""`python -m ctrconv` entry point."""

from ctrconv.cli import main

if __name__ == "__main__":
    main()
