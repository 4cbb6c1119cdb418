package replicate

import "slices"

// feeders returns, for each route, the routes that write its source: the
// routes to run before it.
func feeders(routes []Route) [][]int {
	byTarget := map[string][]int{}
	for i, r := range routes {
		for _, t := range r.Targets {
			byTarget[normRepo(t)] = append(byTarget[normRepo(t)], i)
		}
	}
	out := make([][]int, len(routes))
	for i, r := range routes {
		for _, q := range byTarget[normRepo(r.Source)] {
			if q != i && !slices.Contains(out[i], q) {
				out[i] = append(out[i], q)
			}
		}
	}
	return out
}

// cycle returns routes that feed each other in a cycle, in order (each
// writes the source of the next, the last the source of the first), or nil.
func cycle(routes []Route) []Route {
	in := feeders(routes)
	const (
		unseen = iota
		open
		done
	)
	state := make([]int, len(routes))
	var stack []int
	var found []int
	var visit func(i int) bool
	visit = func(i int) bool {
		state[i] = open
		stack = append(stack, i)
		for _, q := range in[i] {
			switch state[q] {
			case open:
				k := slices.Index(stack, q)
				// stack[k:] is q ... i, each fed by the next: reverse it
				// into the order of the copies.
				found = slices.Clone(stack[k:])
				slices.Reverse(found)
				return true
			case unseen:
				if visit(q) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[i] = done
		return false
	}
	for i := range routes {
		if state[i] == unseen && visit(i) {
			out := make([]Route, len(found))
			for k, idx := range found {
				out[k] = routes[idx]
			}
			return out
		}
	}
	return nil
}

// levels orders the routes for a pass: level 0 has the routes whose source
// no route writes, level n+1 those fed by level n at most. The routes must
// have no cycle.
func levels(routes []Route) []int {
	in := feeders(routes)
	lvl := make([]int, len(routes))
	seen := make([]bool, len(routes))
	var depth func(i int) int
	depth = func(i int) int {
		if seen[i] {
			return lvl[i]
		}
		seen[i] = true // a cycle (refused by Parse) ends here
		d := 0
		for _, q := range in[i] {
			d = max(d, depth(q)+1)
		}
		lvl[i] = d
		return d
	}
	for i := range routes {
		depth(i)
	}
	return lvl
}
