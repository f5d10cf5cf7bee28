"""The Gradio UI and its job runner. It starts pipeline subprocesses and streams what they print."""
