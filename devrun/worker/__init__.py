"""Code that runs only inside an app's child process, never in the runner.

Nothing here may be imported before ``devrun.worker.__main__`` has monkey-patched.
"""
