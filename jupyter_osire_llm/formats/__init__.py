"""Pure formats shared by the kernel side, the server and the job side (standard library)."""
