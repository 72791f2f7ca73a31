"""Dialogs that are more than a question: forms a page opens (New service)."""
