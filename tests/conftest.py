"""Make the repository root importable (`import envs`, `import sgqn`) however pytest is started."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
