package flotilla_test

import (
	"context"
	"fmt"

	"github.com/flotilla/flotilla"
)

// SendEmail is a task payload that names its task.
type SendEmail struct {
	To string `json:"to"`
}

func (SendEmail) TaskName() string { return "email.send" }

// A binary of your own: register handlers next to the built-ins, then call
// app.Main() to get every role (dev, web, api, worker) and admin command.
func Example() {
	app := flotilla.New()
	flotilla.Register(app, func(ctx context.Context, env *flotilla.Envelope, a SendEmail) (any, error) {
		if a.To == "" {
			return nil, flotilla.Permanent(fmt.Errorf("email.send: no recipient"))
		}
		return map[string]string{"sent_to": a.To}, nil
	}, flotilla.WithQueue("action"), flotilla.WithMaxRetries(5))
	// app.Main() would run the command line here.
	fmt.Println(app.Tasks())

	// Output: [email.send probe.http sys.echo sys.fail sys.ping sys.sleep sys.workflow]
}
