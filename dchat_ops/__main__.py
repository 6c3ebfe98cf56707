"""``python -m dchat_ops``: the dchat-ops command line."""

from dchat_ops._cli.main import main

if __name__ == "__main__":
    main()
