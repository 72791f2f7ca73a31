"""Chat: the streaming client, conversations, comparisons and energy readings."""
