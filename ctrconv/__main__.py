"""`python -m ctrconv` entry point (signal handlers before the heavy imports: :mod:`ctrconv.entry`)."""

from ctrconv.entry import main

if __name__ == "__main__":
    main()
