"""semsearch: the command-line tools around the semantic-search stacks."""
