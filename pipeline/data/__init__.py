"""The data users bring: tables in any of the supported formats and encodings (`tables`), and labelled
messages and conversations checked, quarantined and split for training (`labelled`)."""
