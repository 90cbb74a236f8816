"""The command modules, by command name, in the order ``ctrconv --help`` lists them.

Each is imported only when its command runs or ``--help`` lists it (:class:`ctrconv.cli._LazyGroup`);
importing one registers its command on ``app``.
"""

COMMANDS: dict[str, str] = {
    "dump": "ctrconv.cli.dump",
    "import": "ctrconv.cli.import_",
    "export": "ctrconv.cli.export",
    "convert": "ctrconv.cli.convert",
    "commit": "ctrconv.cli.commit",
    "ls": "ctrconv.cli.ls",
    "rebuild": "ctrconv.cli.rebuild",
    "verify": "ctrconv.cli.verify",
}
