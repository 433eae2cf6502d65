"""The seccomp filter every sample runs under (libseccomp through ``pyseccomp``; bwrap loads it).

A deny list over the default ALLOW: the kernel-exploit surface and every way out that the
filesystem and namespaces do not already close. Denied calls fail with EPERM, except ``clone3``,
which fails with ENOSYS so that glibc falls back to ``clone`` (whose namespace flags are denied
here) and ``threading.Thread.start()`` keeps working. Only the native ABI is in the filter: a
syscall made through another ABI (``int 0x80`` i386 calls, x32 calls on x86-64) kills the process
(libseccomp's bad-arch action). A deny list lets through syscalls newer than the libseccomp that
compiled it (the README's threat model says so); names this libseccomp does not know are listed
in :func:`filter_facts` as ``unknown``.
"""
from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import threading

EPERM_SYSCALLS = (
    # sockets: none at all (no unix-socket connect(), no AF_VSOCK, no netlink); socketpair below
    "socket",
    # anonymous memory outside RLIMIT_AS, and the usual kernel-exploit surface
    "memfd_create", "memfd_secret", "io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd",
    "perf_event_open", "bpf", "keyctl", "add_key", "request_key",
    # namespaces and mounts
    "unshare", "setns", "mount", "umount2", "pivot_root", "mount_setattr", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "chroot",
    # other processes' memory and descriptors
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "process_madvise",
    # the kernel itself
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "personality", "acct",
    "swapon", "swapoff", "reboot", "syslog", "quotactl", "open_by_handle_at", "name_to_handle_at", "iopl",
    "ioperm", "uselib", "lookup_dcookie", "vhangup", "fanotify_init",
)
CLONE_NS_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
IOCTL_DENIED = {"TIOCSTI": 0x5412, "TIOCLINUX": 0x541C}  # type into a terminal; the Linux console
AF_UNIX = 1

_lock = threading.Lock()
_cache: dict[str, object] = {}


class SeccompMissing(RuntimeError):
    """The seccomp bindings are not installed (message names the package)."""


def _build() -> tuple[bytes, dict]:
    try:
        import pyseccomp as sc
    except ImportError as exc:
        raise SeccompMissing("the seccomp bindings are missing: pip install pyseccomp (Python package `pyseccomp`, "
                             f"over the system libseccomp2) ({exc})") from None
    except OSError as exc:  # the package is there, libseccomp.so.2 is not
        raise SeccompMissing(f"pyseccomp cannot load libseccomp (install the system package libseccomp2): {exc}") from None
    f = sc.SyscallFilter(sc.ALLOW)
    f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)  # any syscall from a non-native ABI kills the sample
    f.set_attr(sc.Attr.CTL_NNP, 1)
    unknown, eperm = [], sc.ERRNO(errno.EPERM)

    def rule(action, name, *args):
        try:
            f.add_rule(action, name, *args)
        except (OSError, ValueError, TypeError) as exc:  # a name this libseccomp does not know
            unknown.append(f"{name}: {exc}")

    for name in EPERM_SYSCALLS:
        rule(eperm, name)
    rule(sc.ERRNO(errno.ENOSYS), "clone3")
    rule(eperm, "socketpair", sc.Arg(0, sc.NE, AF_UNIX))
    for flag in CLONE_NS_FLAGS:
        rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    for value in IOCTL_DENIED.values():  # the request is an int: compare its low 32 bits only
        rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, value))
    with tempfile.TemporaryFile() as fh:
        f.export_bpf(fh)
        fh.seek(0)
        bpf = fh.read()
    facts = {"seccomp_sha256": hashlib.sha256(bpf).hexdigest(), "seccomp_bytes": len(bpf),
             "seccomp_denied": len(EPERM_SYSCALLS) + 1 + 1 + len(IOCTL_DENIED), "seccomp_unknown": unknown,
             "seccomp_abi": "native only; other ABIs killed", "seccomp_api": sc.get_api()}
    return bpf, facts


def compiled() -> tuple[bytes, dict]:
    """(the BPF program, facts about it), built once per process."""
    with _lock:
        if "bpf" not in _cache:
            _cache["bpf"], _cache["facts"] = _build()
    return _cache["bpf"], dict(_cache["facts"])  # type: ignore[arg-type]


def filter_fd() -> int:
    """A pipe's read end holding the compiled filter (bwrap ``--seccomp FD`` reads it to EOF)."""
    bpf, _ = compiled()
    r, w = os.pipe()
    try:
        if len(bpf) > 65536:
            raise SeccompMissing(f"the seccomp filter ({len(bpf)} bytes) does not fit a pipe")
        os.write(w, bpf)
    finally:
        os.close(w)
    return r
