"""The core: settings, the client and its retry policy, the error tree, the event loop, token counting."""
