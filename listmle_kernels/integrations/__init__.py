"""Drop-in replacements for other libraries' ListMLE losses. Import the submodule you need."""
