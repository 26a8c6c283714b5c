// SPDX-License-Identifier: GPL-2.0

#include <linux/cred.h>
#include <linux/sched/signal.h>
#include <linux/sched/user.h>

__rust_helper struct user_struct *rust_helper_current_user(void)
{
	return current_user();
}

__rust_helper struct user_struct *rust_helper_get_uid(struct user_struct *u)
{
	return get_uid(u);
}

__rust_helper unsigned long rust_helper_task_rlimit(const struct task_struct *task,
						    unsigned int limit)
{
	return task_rlimit(task, limit);
}

__rust_helper struct mm_struct *rust_helper_current_mm(void)
{
	return current->mm;
}
