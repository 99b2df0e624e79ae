"""The `nerschat` command line: one click command per module, gathered in `main.COMMANDS`.

Every command reports user errors as one line and exits 2 (`UsageError`) or 1 (`FailureError`);
`main` catches `NerschatError` once for all of them.
"""
