// Command flotilla runs Flotilla's roles (dev, web, api, worker) and admin
// commands with the built-in tasks. Build your own main with package flotilla
// to add handlers.
package main

import (
	// Embedded zone data: cron time zones and X-Timezone work in minimal
	// containers without /usr/share/zoneinfo.
	_ "time/tzdata"

	"github.com/flotilla/flotilla"
)

func main() {
	flotilla.New().Main()
}
