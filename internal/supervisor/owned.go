package supervisor

import "sync"

// Owned is a process-wide registry of the child processes that this
// program starts and waits for itself, outside this package (for example
// with os/exec). A Child with Options.Reap and Options.Owned leaves their
// exit to their owner instead of reaping them, so the owner's wait still
// gets their status.
//
// Start every such process through Owned.Start, whose signature matches
// command.StartHook. Its zero value is ready to use; it must not be copied
// after first use. Its methods are safe for concurrent use.
type Owned struct {
	// starting is held shared across each start and its registration,
	// and exclusively by the reaper while it decides about a pid, so a
	// process cannot be reaped between its fork and its registration.
	starting sync.RWMutex

	mu   sync.Mutex
	pids map[int]*ownedPid
}

// ownedPid is one registered pid. The same pid can be registered twice
// for a moment: the kernel may reuse it once its owner has waited for it,
// before the owner calls release.
type ownedPid struct {
	n        int
	released chan struct{} // closed when n drops to 0
}

// Start calls start, which starts a process and returns its pid, and
// registers that pid until release is called. The caller must call release
// once it has waited for the process; until then a reaping Child does not
// reap it. When start fails, nothing is registered and release is nil.
func (o *Owned) Start(start func() (pid int, err error)) (release func(), err error) {
	o.starting.RLock()
	defer o.starting.RUnlock()
	pid, err := start()
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.pids == nil {
		o.pids = make(map[int]*ownedPid)
	}
	p := o.pids[pid]
	if p == nil {
		p = &ownedPid{released: make(chan struct{})}
		o.pids[pid] = p
	}
	p.n++
	var once sync.Once
	return func() { once.Do(func() { o.release(pid, p) }) }, nil
}

func (o *Owned) release(pid int, p *ownedPid) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if p.n--; p.n == 0 {
		delete(o.pids, pid)
		close(p.released) // wakes a reaper waiting for this pid
	}
}

// decide runs reap unless pid is registered, and then returns a channel
// that is closed when pid is released. It excludes starts while it runs,
// so a pid that is being started is either registered already or not this
// pid at all (an exited pid cannot be handed to a new process before it is
// reaped). A nil *Owned owns nothing.
func (o *Owned) decide(pid int, reap func()) (released <-chan struct{}) {
	if o == nil {
		reap()
		return nil
	}
	o.starting.Lock()
	defer o.starting.Unlock()
	o.mu.Lock()
	p := o.pids[pid]
	o.mu.Unlock()
	if p != nil {
		return p.released
	}
	reap()
	return nil
}
