"""Read-only NTFS over any random-access stream (rpfs.stream)."""
