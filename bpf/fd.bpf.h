/* From a file descriptor of the current task to its struct file and, for
 * sockets, its struct sock. CO-RE reads only (bpf_probe_read_kernel under the
 * hood), bounds-checked against the fd table, so a bad fd yields NULL.
 * Works in every program type from 5.10 on (bpf_get_current_task).
 */
#ifndef KSPAN_FD_BPF_H
#define KSPAN_FD_BPF_H

#define KSPAN_S_IFMT 00170000
#define KSPAN_S_IFSOCK 0140000
#define KSPAN_S_IFREG 0100000
#define KSPAN_S_IFIFO 0010000

static __always_inline struct file *kspan_fd_file(long fd)
{
	if (fd < 0)
		return NULL;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return NULL;
	unsigned int max_fds = BPF_CORE_READ(fdt, max_fds);
	if ((unsigned long)fd >= max_fds)
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

static __always_inline __u32 kspan_file_mode(struct file *file)
{
	return BPF_CORE_READ(file, f_inode, i_mode) & KSPAN_S_IFMT;
}

/* The struct sock behind a socket file, or NULL for any other file. */
static __always_inline struct sock *kspan_file_sock(struct file *file)
{
	if (!file || kspan_file_mode(file) != KSPAN_S_IFSOCK)
		return NULL;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	return sock ? BPF_CORE_READ(sock, sk) : NULL;
}

#endif /* KSPAN_FD_BPF_H */
