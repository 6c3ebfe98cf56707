"""The chat runtime that proves a network works: identities, sealed envelopes, directory, mail and history."""
