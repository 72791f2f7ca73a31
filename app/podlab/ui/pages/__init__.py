"""One module per page of the main window; each page is a QWidget with a `title`."""
