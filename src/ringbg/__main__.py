"""``python -m ringbg``: the command line."""

from ringbg.entry import main

if __name__ == "__main__":
    main()
