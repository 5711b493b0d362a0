"""What every layer shares and nothing else: the retry policy, SQLite connections and
transactions, the data directory's files. Imports nothing from the project."""
