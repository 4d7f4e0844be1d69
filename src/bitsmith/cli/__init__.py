"""The ``bitsmith`` command line: thin sub-commands that parse, call the API and print."""
