"""`python -m carevoice` runs the command-line tool."""

from carevoice.cli.app import main

if __name__ == "__main__":
    main()
