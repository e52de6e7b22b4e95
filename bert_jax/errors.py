"""The one exception type for user mistakes (bad files, bad fields, bad text).

The CLI prints `error: <message>` for it and exits 2, no traceback. Messages name the file/field and
what was expected, e.g. `data.csv row 12: column 'label' is missing`.
"""


class BertJaxError(Exception):
    """A user-facing error: the message alone explains what to fix."""
