"""Running a command without typer: what every run shares (its outcome: exit codes and error
lines, :mod:`~ctrconv.run.outcome`), command bodies as functions of their options
(:mod:`~ctrconv.run.ls`), and the shortcut that runs the most frequent command lines of
those without building the typer app (:mod:`~ctrconv.run.shortcut`). :mod:`ctrconv.cli` wraps
the same bodies in typer commands; nothing here imports typer."""
