// The controller-runtime contender of the operator benchmark (kuberator-bench): the same
// reconcile as the others, written the way a kubebuilder project writes it. It adds the
// finalizer, writes status with observedGeneration and a Ready condition, and on deletion
// removes the finalizer. It watches one namespace with the manager's default cache.
//
// Environment: KUBECONFIG, BENCH_NAMESPACE, BENCH_CONCURRENCY, BENCH_METRICS_ADDRESS.
// A line "count" on stdin is answered on stdout with the number of reconciles so far.
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

const finalizer = "benches.bench.kuberator.dev/finalizer"

var groupVersion = schema.GroupVersion{Group: "bench.kuberator.dev", Version: "v1"}

// BenchSpec mirrors the Rust contenders' spec.
type BenchSpec struct {
	Replicas int32             `json:"replicas"`
	Image    string            `json:"image"`
	Labels   map[string]string `json:"labels,omitempty"`
	Payload  string            `json:"payload"`
}

// BenchStatus is what every contender writes.
type BenchStatus struct {
	ObservedGeneration int64              `json:"observedGeneration,omitempty"`
	Conditions         []metav1.Condition `json:"conditions,omitempty"`
}

// Bench is the benchmark's custom resource.
type Bench struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              BenchSpec   `json:"spec,omitempty"`
	Status            BenchStatus `json:"status,omitempty"`
}

// BenchList is a list of Bench.
type BenchList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Bench `json:"items"`
}

// DeepCopyObject is what controller-gen would generate.
func (in *Bench) DeepCopyObject() runtime.Object {
	out := new(Bench)
	*out = *in
	in.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	if in.Spec.Labels != nil {
		out.Spec.Labels = make(map[string]string, len(in.Spec.Labels))
		for k, v := range in.Spec.Labels {
			out.Spec.Labels[k] = v
		}
	}
	if in.Status.Conditions != nil {
		out.Status.Conditions = make([]metav1.Condition, len(in.Status.Conditions))
		for i := range in.Status.Conditions {
			in.Status.Conditions[i].DeepCopyInto(&out.Status.Conditions[i])
		}
	}
	return out
}

// DeepCopyObject is what controller-gen would generate.
func (in *BenchList) DeepCopyObject() runtime.Object {
	out := new(BenchList)
	*out = *in
	in.ListMeta.DeepCopyInto(&out.ListMeta)
	if in.Items != nil {
		out.Items = make([]Bench, len(in.Items))
		for i := range in.Items {
			out.Items[i] = *in.Items[i].DeepCopyObject().(*Bench)
		}
	}
	return out
}

var reconciles atomic.Int64

type reconciler struct {
	client.Client
}

func (r *reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	reconciles.Add(1)
	var bench Bench
	if err := r.Get(ctx, req.NamespacedName, &bench); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !bench.DeletionTimestamp.IsZero() {
		if controllerutil.RemoveFinalizer(&bench, finalizer) {
			return ctrl.Result{}, r.Update(ctx, &bench)
		}
		return ctrl.Result{}, nil
	}
	if controllerutil.AddFinalizer(&bench, finalizer) {
		if err := r.Update(ctx, &bench); err != nil {
			return ctrl.Result{}, err
		}
	}
	bench.Status.ObservedGeneration = bench.Generation
	meta.SetStatusCondition(&bench.Status.Conditions, metav1.Condition{
		Type:               "Ready",
		Status:             metav1.ConditionTrue,
		Reason:             "Reconciled",
		Message:            "reconciled",
		ObservedGeneration: bench.Generation,
	})
	return ctrl.Result{}, r.Status().Update(ctx, &bench)
}

func main() {
	namespace := os.Getenv("BENCH_NAMESPACE")
	concurrency, err := strconv.Atoi(os.Getenv("BENCH_CONCURRENCY"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "BENCH_CONCURRENCY must be a number:", err)
		os.Exit(2)
	}
	scheme := runtime.NewScheme()
	scheme.AddKnownTypes(groupVersion, &Bench{}, &BenchList{})
	metav1.AddToGroupVersion(scheme, groupVersion)

	config := ctrl.GetConfigOrDie()
	// The benchmark measures the frameworks, not client-go's default limit of 20 requests a
	// second, which every operator at this scale raises.
	config.QPS, config.Burst = 1e6, 1e6
	manager, err := ctrl.NewManager(config, ctrl.Options{
		Scheme:  scheme,
		Cache:   cache.Options{DefaultNamespaces: map[string]cache.Config{namespace: {}}},
		Metrics: metricsserver.Options{BindAddress: os.Getenv("BENCH_METRICS_ADDRESS")},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating the manager:", err)
		os.Exit(1)
	}
	err = ctrl.NewControllerManagedBy(manager).
		For(&Bench{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: concurrency}).
		Complete(&reconciler{manager.GetClient()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating the controller:", err)
		os.Exit(1)
	}
	go func() {
		lines := bufio.NewScanner(os.Stdin)
		for lines.Scan() {
			if lines.Text() == "count" {
				fmt.Println(reconciles.Load())
			}
		}
	}()
	if err := manager.Start(ctrl.SetupSignalHandler()); err != nil {
		fmt.Fprintln(os.Stderr, "running the manager:", err)
		os.Exit(1)
	}
}
