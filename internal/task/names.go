package task

import "fmt"

// DefaultQueue is used when an enqueue names no queue.
const DefaultQueue = "default"

// MaxNameLen bounds task and queue names (they are NATS subject tokens).
const MaxNameLen = 128

// ValidateName reports whether name is a valid task name such as
// "monitor.update_metric_list".
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("task name is empty")
	}
	if len(name) > MaxNameLen || !validName(name) {
		return fmt.Errorf("task name %q is invalid: want lower-case words of [a-z0-9_] separated by dots, at most %d characters", name, MaxNameLen)
	}
	return nil
}

// ValidateQueue reports whether queue is a valid queue name such as "default".
func ValidateQueue(queue string) error {
	if queue == "" {
		return fmt.Errorf("queue name is empty")
	}
	if queue == "mover" {
		return fmt.Errorf("queue name %q is reserved (delayed-mover is the consumer that moves due delayed tasks)", queue)
	}
	if len(queue) > MaxNameLen || !validQueue(queue) {
		return fmt.Errorf("queue name %q is invalid: want [a-z0-9_-]+, at most %d characters", queue, MaxNameLen)
	}
	return nil
}

func wordByte(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' }

// validName matches ^[a-z0-9_]+(\.[a-z0-9_]+)*$ without a regexp (hot path).
func validName(s string) bool {
	prevDot := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if prevDot {
				return false
			}
			prevDot = true
			continue
		}
		if !wordByte(c) {
			return false
		}
		prevDot = false
	}
	return !prevDot
}

// validQueue matches ^[a-z0-9_-]+$.
func validQueue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !wordByte(c) && c != '-' {
			return false
		}
	}
	return len(s) > 0
}
