/*
 * xen-shim.c - lets Xen 4.17's C xenstored run with no hypervisor, so that
 * the differential tests (tests/tests/c_compat.rs) can put the same
 * requests to it and to xenstored-lite over their Unix sockets.
 *
 * Loaded with LD_PRELOAD, it takes the place of every libxenctrl,
 * libxenevtchn and libxengnttab function the daemon imports (see
 * `nm -D --undefined-only xenstored`), and of libc's open()/fopen() for the
 * two /proc/xen files dom0's connection comes from. The real libraries are
 * still loaded but never reached, so nothing touches /dev/xen.
 *
 * What it pretends:
 *   - the privcmd, event-channel and grant-table handles open; the
 *     event-channel fd is the read end of a pipe nobody writes, so no event
 *     ever arrives and the daemon only serves its sockets;
 *   - every domain exists and is running (no dying/shutdown bits), so
 *     INTRODUCE and domain checks behave as for live guests;
 *   - a granted ring page is a fresh anonymous page nobody else sees;
 *   - event-channel ports are numbers handed out from 100 upwards;
 *     notifications go nowhere;
 *   - /proc/xen/xsd_port reads as "1" and /proc/xen/xsd_kva is a 4 KiB
 *     file of zeros (dom0's ring, which nobody uses): both are files the
 *     shim creates in $XSL_SHIM_DIR (default $XENSTORED_RUNDIR, else /tmp).
 *
 * Fault injection (test only, for the live-update roll-back test in
 * tests/tests/live_update_c.rs): with XSL_SHIM_FAIL_STATE_READ=1 in its
 * environment, a process named "xenstored" (C xenstored, not
 * xenstored-lite, which inherits the same environment) that opens a path
 * ending in "/state_dump" exits at once with status 70: C dies after the
 * exec and before it has read the state a live update left it.
 *
 * The few Xen types it needs are declared here: the test needs no Xen
 * headers (libxen-dev). Only the start of xc_dominfo_t matters, since the
 * daemon reads no field past the flags word.
 *
 * Build: cc -shared -fPIC -o xen-shim.so xen-shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SHIM_PAGE 4096

/* Opaque handles: the daemon only passes them back to us. */
struct shim_handle {
	int fd;
};

/* The leading fields of Xen 4.17's xc_dominfo_t (xenctrl.h). */
struct shim_dominfo_head {
	uint32_t domid;
	uint32_t ssidref;
	unsigned int flags; /* dying:1, crashed:1, shutdown:1, ... */
	unsigned int shutdown_reason;
};

static unsigned int next_port = 100;

/* --- /proc/xen redirection --------------------------------------------- */

static const char *shim_dir(void)
{
	const char *d = getenv("XSL_SHIM_DIR");

	if (!d || !*d)
		d = getenv("XENSTORED_RUNDIR");
	return d && *d ? d : "/tmp";
}

/*
 * Returns the file that stands for `path` (creating it with `size` bytes,
 * the first of them `text`, if missing), or `path` itself if it is not one
 * of ours. `buf` holds the result.
 */
static const char *redirect(const char *path, char *buf, size_t len)
{
	const char *name, *text;
	size_t size;
	int fd;

	if (!path)
		return path;
	if (!strcmp(path, "/proc/xen/xsd_port")) {
		name = "xsd_port";
		text = "1";
		size = 1;
	} else if (!strcmp(path, "/proc/xen/xsd_kva")) {
		name = "xsd_kva";
		text = "";
		size = SHIM_PAGE;
	} else {
		return path;
	}
	snprintf(buf, len, "%s/%s", shim_dir(), name);
	if (access(buf, F_OK) != 0) {
		int (*real_open)(const char *, int, ...) = dlsym(RTLD_NEXT, "open");

		fd = real_open(buf, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd >= 0) {
			if (write(fd, text, strlen(text)) < 0 ||
			    ftruncate(fd, (off_t)size) < 0)
				perror("xen-shim: preparing a /proc/xen stand-in");
			close(fd);
		}
	}
	return buf;
}

/* The fault injection above: ends C as it opens the live-update state. */
static void maybe_fail_state_read(const char *path)
{
	const char *on = getenv("XSL_SHIM_FAIL_STATE_READ");
	size_t len = path ? strlen(path) : 0;
	static const char tail[] = "/state_dump";

	if (!on || strcmp(on, "1") || strcmp(program_invocation_short_name, "xenstored"))
		return;
	if (len >= sizeof(tail) - 1 && !strcmp(path + len - (sizeof(tail) - 1), tail)) {
		static const char msg[] =
			"xen-shim: XSL_SHIM_FAIL_STATE_READ=1: exiting before the state is read\n";

		if (write(2, msg, sizeof(msg) - 1) < 0) {
			/* Nothing to do: the exit below is the point. */
		}
		_exit(70);
	}
}

int open(const char *path, int flags, ...)
{
	static int (*real_open)(const char *, int, ...);
	char buf[4096];
	mode_t mode = 0;

	if (!real_open)
		real_open = dlsym(RTLD_NEXT, "open");
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;

		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	maybe_fail_state_read(path);
	return real_open(redirect(path, buf, sizeof(buf)), flags, mode);
}

FILE *fopen(const char *path, const char *how)
{
	static FILE *(*real_fopen)(const char *, const char *);
	char buf[4096];

	if (!real_fopen)
		real_fopen = dlsym(RTLD_NEXT, "fopen");
	maybe_fail_state_read(path);
	return real_fopen(redirect(path, buf, sizeof(buf)), how);
}

/* --- libxenctrl --------------------------------------------------------- */

void *xc_interface_open(void *logger, void *dombuild_logger, unsigned int flags)
{
	(void)logger;
	(void)dombuild_logger;
	(void)flags;
	return calloc(1, sizeof(struct shim_handle));
}

int xc_interface_close(void *xch)
{
	free(xch);
	return 0;
}

/* Every domain asked about exists and runs: one entry, `first_domid`. */
int xc_domain_getinfo(void *xch, uint32_t first_domid, unsigned int max_doms,
		      struct shim_dominfo_head *info)
{
	(void)xch;
	if (max_doms == 0)
		return 0;
	memset(info, 0, sizeof(*info));
	info->domid = first_domid;
	return 1;
}

/* --- libxengnttab ------------------------------------------------------- */

void *xengnttab_open(void *logger, unsigned int flags)
{
	(void)logger;
	(void)flags;
	return calloc(1, sizeof(struct shim_handle));
}

int xengnttab_close(void *xgt)
{
	free(xgt);
	return 0;
}

int xengnttab_set_max_grants(void *xgt, uint32_t count)
{
	(void)xgt;
	(void)count;
	return 0;
}

void *xengnttab_map_grant_ref(void *xgt, uint32_t domid, uint32_t ref, int prot)
{
	void *page;

	(void)xgt;
	(void)domid;
	(void)ref;
	page = mmap(NULL, SHIM_PAGE, prot ? prot : PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return page == MAP_FAILED ? NULL : page;
}

int xengnttab_unmap(void *xgt, void *start, uint32_t count)
{
	(void)xgt;
	return munmap(start, (size_t)count * SHIM_PAGE);
}

/* --- libxenevtchn ------------------------------------------------------- */

static void *evtchn_handle(int fd)
{
	struct shim_handle *h = calloc(1, sizeof(*h));
	int quiet[2];

	if (!h)
		return NULL;
	if (fd < 0) {
		/* A pipe whose write end stays open and unused: never readable. */
		if (pipe(quiet) < 0) {
			free(h);
			return NULL;
		}
		fd = quiet[0];
	}
	h->fd = fd;
	return h;
}

void *xenevtchn_open(void *logger, unsigned int flags)
{
	(void)logger;
	(void)flags;
	return evtchn_handle(-1);
}

void *xenevtchn_fdopen(void *logger, int fd, unsigned int flags)
{
	(void)logger;
	(void)flags;
	return evtchn_handle(fd);
}

int xenevtchn_close(void *xce)
{
	free(xce);
	return 0;
}

int xenevtchn_fd(void *xce)
{
	return ((struct shim_handle *)xce)->fd;
}

int xenevtchn_notify(void *xce, uint32_t port)
{
	(void)xce;
	(void)port;
	return 0;
}

int xenevtchn_bind_interdomain(void *xce, uint32_t domid, uint32_t remote_port)
{
	(void)xce;
	(void)domid;
	(void)remote_port;
	return (int)next_port++;
}

int xenevtchn_bind_virq(void *xce, unsigned int virq)
{
	(void)xce;
	(void)virq;
	return (int)next_port++;
}

int xenevtchn_unbind(void *xce, uint32_t port)
{
	(void)xce;
	(void)port;
	return 0;
}

/* Never called in practice: the fd never becomes readable. */
int xenevtchn_pending(void *xce)
{
	(void)xce;
	errno = EAGAIN;
	return -1;
}

int xenevtchn_unmask(void *xce, uint32_t port)
{
	(void)xce;
	(void)port;
	return 0;
}
