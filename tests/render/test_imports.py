import subprocess
import sys


def test_render_modules_never_import_torch():
    modules = ["cameras", "commands", "show", "stage", "supervisor", "worker"]
    code = (
        "import sys\n"
        + "".join(f"import cg3d.render.{m}\n" for m in modules)
        + "import cg3d.geometry.meshio\n"  # what the Blender worker loads OFF files with
        + "print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
