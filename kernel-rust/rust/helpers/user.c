// SPDX-License-Identifier: GPL-2.0

#include <linux/cred.h>
#include <linux/sched/signal.h>
#include <linux/sched/user.h>

/**
 * rust_helper_current_user() - current_user() for Rust, which cannot call macros.
 *
 * Return: the user of the current task's credentials, without a reference taken.
 */
__rust_helper struct user_struct *rust_helper_current_user(void)
{
	return current_user();
}

/**
 * rust_helper_get_uid() - get_uid() for Rust, an inline function.
 * @u: a user with a reference held.
 *
 * Return: @u, with one more reference.
 */
__rust_helper struct user_struct *rust_helper_get_uid(struct user_struct *u)
{
	return get_uid(u);
}

/**
 * rust_helper_task_rlimit() - task_rlimit() for Rust, an inline function.
 * @task: a valid task.
 * @limit: an RLIMIT_* resource.
 *
 * Return: the soft limit of @limit for @task.
 */
__rust_helper unsigned long rust_helper_task_rlimit(const struct task_struct *task,
						    unsigned int limit)
{
	return task_rlimit(task, limit);
}

/**
 * rust_helper_current_mm() - current->mm, read in C.
 *
 * bindgen lays out struct task_struct wrongly with CONFIG_SCHEDSTATS=n
 * (the empty, cacheline-aligned struct sched_statistics loses its
 * alignment), so Rust must not read fields after ->stats itself.
 *
 * Return: the address space of the current task, NULL for a kernel thread.
 */
__rust_helper struct mm_struct *rust_helper_current_mm(void)
{
	return current->mm;
}
