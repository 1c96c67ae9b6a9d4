"""Everything that runs inside Blender (bpy): scene reset, import, normalise, cameras, lights, engines. Never imports torch."""
